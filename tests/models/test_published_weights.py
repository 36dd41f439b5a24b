"""Every published-weights tag: listed with its source, loaded from a local file in its publisher's layout, checked."""

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch

from robustft.cli import main
from robustft.errors import UserError
from robustft.models import KNOWN_WEIGHTS, create_model, load_checkpoint
from robustft.models.hub import LAYOUTS, PretrainedWeights, cached_path, weights_table
from support import error_line

ROOT = Path(__file__).resolve().parents[2]
# Options that shrink each tagged ImageNet architecture to a few thousand parameters with the same key names.
TINY = {
    "resnet18": dict(widths=(4, 4, 4, 4)),
    "resnet50": dict(widths=(4, 4, 4, 4)),
    "wide_resnet50_2": dict(widths=(4, 4, 4, 4)),
    "swin_base_patch4_window7_224": dict(img_size=56, embed_dim=8, depths=(2, 2), num_heads=(1, 2)),
    "vit_base_patch16_224": dict(img_size=32, embed_dim=12, depth=1, num_heads=2),
    "vit_small_patch16_224": dict(img_size=32, embed_dim=12, depth=1, num_heads=2),
}


def _published_file(path: Path, name: str, weights: PretrainedWeights) -> torch.nn.Module:
    """Write a tiny network of ``name``'s architecture to ``path`` in the layout its publisher ships; return it."""
    arch = name.partition(".")[0]
    torch.manual_seed(0)
    model = create_model(arch, weights.num_classes, normalization=weights.normalization, **TINY.get(arch, {})).eval()
    network = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    if weights.layout == "robustness":  # robustness' AttackerModel under DataParallel: the network twice
        mean, std = model.normalize.mean.reshape(3, 1, 1), model.normalize.std.reshape(3, 1, 1)
        state = {**{f"module.model.{k}": v for k, v in network.items()},
                 **{f"module.attacker.model.{k}": v for k, v in network.items()},
                 "module.normalizer.new_mean": mean, "module.normalizer.new_std": std,
                 "module.attacker.normalizer.new_mean": mean, "module.attacker.normalizer.new_std": std}
        torch.save({"model": state, "optimizer": {}, "schedule": None, "epoch": 90}, path)
    elif weights.layout == "robustbench":  # saved from DataParallel, the normalizer outside the file
        torch.save({"state_dict": {f"module.{k}": v for k, v in network.items()}}, path)
    else:  # ARES: torch.save(model.state_dict()) of the timm model
        torch.save(network, path)
    return model


PUBLISHED = {name: w for name, w in KNOWN_WEIGHTS.items() if not w.asset}  # bundled: tests/models/test_bundled_*


def test_every_tag_has_a_known_layout_a_source_and_a_checksum_or_the_reason_it_has_none():
    assert len(PUBLISHED) >= 50
    for name, w in PUBLISHED.items():
        assert w.layout in LAYOUTS and w.source and w.url.startswith("https://"), name
        assert (w.sha256 is None) == bool(w.checksum_note), name
        assert w.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", w.sha256), name
    assert KNOWN_WEIGHTS["resnet50.madry_linf0p5_in1k"].url.endswith("/resnet50_linf_eps0.5.ckpt")
    assert KNOWN_WEIGHTS["wide_resnet50_2.madry_l2_0p25_in1k"].url.endswith("/wide_resnet50_2_l2_eps0.25.ckpt")
    assert next(n for n in KNOWN_WEIGHTS if n.startswith("resnet50.")) == "resnet50.madry_linf4_in1k"  # the default


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_tag_loads_its_published_layout_from_the_cache(name, tmp_path, monkeypatch):
    weights = KNOWN_WEIGHTS[name]
    upstream = tmp_path / "upstream.bin"
    source = _published_file(upstream, name, weights)
    monkeypatch.setenv("ROBUSTFT_CACHE", str(tmp_path / "cache"))

    def download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        assert (url, hash_prefix) == (weights.url, weights.sha256)
        shutil.copyfile(upstream, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    arch = name.partition(".")[0]
    x = torch.rand(2, 3, *source.pretrained_cfg.input_size[1:])
    for model in (create_model(name, pretrained=True, **TINY.get(arch, {})),  # Python
                  load_checkpoint(name, **TINY.get(arch, {}))):  # what evaluate / finetune --arch ARCH.TAG call
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x), source(x), rtol=0, atol=0)
        assert model.pretrained_cfg.normalization_source == "checkpoint"


def _file_entry(monkeypatch, tmp_path, payload: bytes, sha256: str | None) -> str:
    """A known-weights entry whose URL is a local file (urllib reads file:// as it reads https://)."""
    tmp_path.mkdir(exist_ok=True)
    upstream = tmp_path / "upstream.pt"
    upstream.write_bytes(payload)
    monkeypatch.setenv("ROBUSTFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(KNOWN_WEIGHTS, "cifar_resnet20.file_c10", PretrainedWeights(
        url=upstream.as_uri(), num_classes=10, normalization="cifar10", description="test", sha256=sha256,
        checksum_note="" if sha256 else "none published", source="test"))
    return "cifar_resnet20.file_c10"


def test_download_is_checked_against_the_published_sha256(tmp_path, monkeypatch):
    torch.save(create_model("cifar_resnet20").state_dict(), tmp_path / "r20.pt")
    payload = (tmp_path / "r20.pt").read_bytes()
    name = _file_entry(monkeypatch, tmp_path, payload, hashlib.sha256(payload).hexdigest())
    create_model(name, pretrained=True)
    assert cached_path(name).read_bytes() == payload

    name = _file_entry(monkeypatch, tmp_path / "corrupt", payload[:-1] + b"x", hashlib.sha256(payload).hexdigest())
    with pytest.raises(UserError, match="does not have its published sha256 .*; it was not kept"):
        create_model(name, pretrained=True)
    assert not any((tmp_path / "corrupt" / "cache").iterdir())


def test_a_web_page_served_instead_of_the_file_is_refused_and_not_cached(tmp_path, monkeypatch, npz_data, capsys):
    name = _file_entry(monkeypatch, tmp_path, b"<!DOCTYPE html><html><title>Google Drive</title></html>", None)
    rc = main(["evaluate", "--arch", name, "--data", str(npz_data)])
    assert rc == 2 and "served a web page instead of the cifar_resnet20.file_c10 weights" in error_line(
        capsys.readouterr().err)
    assert not cached_path(name).exists()


def test_models_lists_every_tag_with_its_source_and_the_docs_table_is_its_output(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, w in KNOWN_WEIGHTS.items():
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{name}:"))
        assert w.url in line and w.source in line and (w.sha256 or w.checksum_note) in line
    assert "  wide_resnet50_2\n" in out
    assert main(["models", "--format", "markdown"]) == 0
    table = capsys.readouterr().out
    assert table == weights_table()
    doc = (ROOT / "docs/models.md").read_text()
    generated = doc.split("<!-- generated by `robustft models --format markdown` -->\n", 1)[1]
    assert generated.split("<!-- end generated -->", 1)[0] == table, "regenerate docs/models.md's table"
