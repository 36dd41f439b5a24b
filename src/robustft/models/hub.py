"""Published checkpoints: known robust weights addressed by timm-style ``arch.tag`` names and their download cache,
``hf-hub:OWNER/REPO`` names resolved through ``huggingface_hub``, and the ``config.json`` of hub model directories."""

import json
import os
import sys
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch

from robustft.errors import UserError
from robustft.models.checkpoint import HUB_WEIGHT_FILES

__all__ = ["PretrainedWeights", "KNOWN_WEIGHTS", "LAYOUTS", "weights_table", "cache_dir", "cached_path",
           "fetch_weights", "HF_HUB_PREFIX", "hf_hub_directory", "HubConfig", "read_hub_config"]


Layout = Literal["robustness", "timm", "robustbench", "robustft"]
LAYOUTS: dict[str, str] = {  # what each published file holds; ``checkpoint.unwrap_state_dict`` reads them all
    "robustness": "MadryLab robustness .ckpt: {model: {module.model.*, module.attacker.model.*, "
                  "module.normalizer.new_mean/new_std}}",
    "timm": "plain timm state dict (ARES 2.0 release), no normalizer",
    "robustbench": "RobustBench ImageNet .pt: the network's state dict (module./model. prefixes possible), "
                   "normalized outside",
    "robustft": "robustft state dict with its normalize.mean/std buffers",
}


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a published checkpoint lives, what it expects, and how its download is checked."""

    url: str
    num_classes: int
    normalization: str
    description: str
    sha256: str | None = None  # the checksum its publisher shows; the download is refused when it differs
    checksum_note: str = ""  # why there is no sha256
    layout: Layout = "robustness"
    source: str = ""  # where the URL (and checksum) were read
    asset: str = ""  # a file shipped in robustft/assets (``url`` is its file:// URI): nothing to download


# The robust ImageNet models of Salman et al. 2020 ("Do Adversarially Robust ImageNet Models Transfer Better?",
# trained with MadryLab's `robustness` library; TWINS starts from the Linf 4/255 ResNet-50). URLs and clean top-1 from
# the model card of huggingface.co/madrylab/robust-imagenet-models (README.md at 3f04ac9; the same files as the
# expired Azure links of github.com/microsoft/robust-models-transfer's README); sha256 from the Git LFS details that
# hub shows on each file's page (blob/3f04ac9/<file>). Where none is recorded here the hub shows one that robustft
# has not transcribed: the download is then unchecked and its entry says so.
_MADRY = "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main"
_MADRY_SOURCE = "huggingface.co/madrylab/robust-imagenet-models (model card at 3f04ac9; Salman et al. 2020)"
# (arch, norm) -> {eps as the file names write it: clean top-1 % from the model card}
_MADRY_ACCURACY: dict[tuple[str, str], dict[str, float]] = {
    ("resnet18", "l2"): {"0": 69.79, "0.01": 69.90, "0.03": 69.24, "0.05": 69.15, "0.1": 68.77, "0.25": 67.43,
                         "0.5": 65.49, "1": 62.32, "3": 53.12, "5": 45.59},
    ("resnet50", "l2"): {"0": 75.80, "0.01": 75.68, "0.03": 75.76, "0.05": 75.59, "0.1": 74.78, "0.25": 74.14,
                         "0.5": 73.16, "1": 70.43, "3": 62.83, "5": 56.13},
    ("wide_resnet50_2", "l2"): {"0": 76.97, "0.01": 77.25, "0.03": 77.26, "0.05": 77.17, "0.1": 76.74, "0.25": 76.21,
                                "0.5": 75.11, "1": 73.41, "3": 66.90, "5": 60.94},
    ("resnet18", "linf"): {"0.5": 66.13, "1.0": 63.46, "2.0": 59.63, "4.0": 52.49, "8.0": 42.11},
    ("resnet50", "linf"): {"0.5": 73.73, "1.0": 72.05, "2.0": 69.10, "4.0": 63.86, "8.0": 54.53},
    ("wide_resnet50_2", "linf"): {"0.5": 75.82, "1.0": 74.65, "2.0": 72.35, "4.0": 68.41, "8.0": 60.82},
}
_MADRY_SHA256 = {
    "resnet18_l2_eps0": "d762c58693a2ecaf93160060bb2c32493598540a08852fb3068e95e88f032623",
    "resnet18_l2_eps0.01": "629a82377947785e5481eeaf4e22e3ca59a2eedeb4e385730ee2392b2678407d",
    "resnet18_l2_eps0.05": "00912b1aa6d60cf7536b52762ed702e0b9cae822187200f42fe4f6a678771bed",
    "resnet18_l2_eps0.1": "2477188559680d096a4eccf5bc7610317cab4b46a97094072d38a29a11bfa8fc",
    "resnet18_l2_eps0.25": "2bed566c554755a0f6f82ddbe83c707d259801308f966e787bcd287f969c7911",
    "resnet18_l2_eps0.5": "69a10462280f266ab855547fde0649ac909f06174ed8df83b8bf2ea0f6fc8150",
    "resnet18_l2_eps1": "92e6c37af550167c7c49c77ad31aad027de4e1f47fbef57546a48ef43626ebcf",
    "resnet18_l2_eps3": "b4315784a1a10257b05906aee94d6884678f7b77412d10100d7c05daa959eab0",
    "resnet18_l2_eps5": "d3ef126afdf9144a22020988dc46f552a0c39347e954c34359a3cb6bf83df186",
    "resnet18_linf_eps0.5": "48d5e933d4ec99b390a0b7c628a4303343f9517a46245cbd7d2f2c034cbd93ee",
    "resnet18_linf_eps1.0": "b49800111d38197deefb0c236055fbdd9d91a0607e55d6cc0bce15504adc9582",
    "resnet18_linf_eps2.0": "bf2611291cc5f792c7f8f17ff6f841f9a0ede32dbe575cbd5bc57233139ae8bd",
    "resnet18_linf_eps4.0": "6f8ccef1ae4958c381617081e9e0fb5f50e7cccd4965192d1caa452fd6c5cd1e",
    "resnet50_l2_eps0": "72d4a99582db5d7fa86c3fd2a089f0bfd6a10f69d635bca51f6ad72ac6b458f0",
    "resnet50_l2_eps0.01": "53d7a7c09d2733b113e255ac9fc578091f44adb8d00eee274c0e71dd1f4dc41e",
    "resnet50_l2_eps0.03": "e375df3bf07bf1360c04b0aff5cc19bb215e850b1af713327c87cf0353a5598f",
    "resnet50_l2_eps0.05": "e09d8763fcf825542f07389a1904adf15930451b8661a0de209c3bc39828c2ea",
    "resnet50_l2_eps0.1": "3298f8cf689e514d096df883ab491a11ee32c3b8d456d674add29d7b50721a43",
    "resnet50_l2_eps0.5": "a5fc6fcc54946b73af7bd74289b0003cc9d2744fa0ff55c1a3d9fb2bce8fbd30",
    "resnet50_l2_eps1": "09f5273a568830ae23caf9162a06f4831a920293e0da1801aa182289052dcf90",
    "resnet50_l2_eps3": "380b14e6f9750bffa1447cf7017f65da4dc5ce71a3dd112f107515dcf7b14d9d",
    "resnet50_l2_eps5": "c50db4bbd9a61bc0e0a33290e1f07a79080e16489aa5ada869efc88306f497be",
    "resnet50_linf_eps0.5": "9612d8096ef5378b4a32746072f72fedcb02c7ff4b747bc7163274f7ec2f0fd8",
    "resnet50_linf_eps2.0": "59f28de783a049cb4d91ba1c0a09c314db2cc4bb1e859566e023f842b02772ac",
    "resnet50_linf_eps4.0": "9e62216975c111b8081481533b6142dec34be69abe5d90b54d7f860015c263db",
    "resnet50_linf_eps8.0": "b907957f8e3ce209816813d8811c682e965a1b0f48455def828d35a4cc2953dc",
    "wide_resnet50_2_l2_eps0.01": "598f5be2e552bba5c21e3581a68339f5166859d9a959a2c90ce1027ec4abd76c",
    "wide_resnet50_2_l2_eps0.05": "c8f12d8ead34232f80d09ca681deba7c42ede5762a7aadd16b7894227b80f1d8",
}


def _madry_tag(norm: str, eps: str) -> str:
    """``madry_l2_3_in1k``, ``madry_l2_0p25_in1k``, ``madry_linf4_in1k``, ``madry_linf0p5_in1k``: eps as in the
    file name (L2 in [0,1] pixels, Linf in 1/255), trailing ``.0`` dropped and ``.`` written ``p``."""
    value = eps.removesuffix(".0").replace(".", "p")
    return f"madry_l2_{value}_in1k" if norm == "l2" else f"madry_linf{value}_in1k"


def _madry_weights() -> dict[str, PretrainedWeights]:
    """One entry per MadryLab file of the ResNet-18/50 and Wide ResNet-50-2 families."""
    out = {}
    for (arch, norm), accuracies in _MADRY_ACCURACY.items():
        for eps, accuracy in accuracies.items():
            stem = f"{arch}_{norm}_eps{eps}"
            budget = "standard training (eps 0)" if eps == "0" else (
                f"L2 eps {eps}" if norm == "l2" else f"Linf eps {eps.removesuffix('.0')}/255")
            sha = _MADRY_SHA256.get(stem)
            out[f"{arch}.{_madry_tag(norm, eps)}"] = PretrainedWeights(
                url=f"{_MADRY}/{stem}.ckpt", num_classes=1000, normalization="imagenet",
                description=f"Salman et al. 2020 (MadryLab robustness), ImageNet-1k, {budget}; {accuracy:.2f}% "
                            f"clean top-1 per its model card",
                sha256=sha, checksum_note="" if sha else "shown on the hub's file page, not yet recorded here",
                layout="robustness", source=_MADRY_SOURCE)
    return out


# ARES 2.0 (thu-ml/ares robust_training/README.md at 306e35f): ImageNet-1k Linf 4/255 adversarial training of timm
# models; RoLI fine-tunes the Swin-B and ViT-B ones. Plain timm state dicts; the model zoo
# (ares/model/imagenet_model_zoo.py) normalizes their inputs with timm's ImageNet default mean/std.
_ARES = "https://ml.cs.tsinghua.edu.cn/~xiaoyang/aresbench/ckpt-imagenet"
_ARES_SOURCE = "github.com/thu-ml/ares robust_training/README.md (306e35f); Liu et al. 2023"
_ARES_FILES = {  # arch -> (file, clean %, AutoAttack % at Linf 4/255 on 1000 val images, per that README)
    "swin_base_patch4_window7_224": ("ARES_Swin_base_patch4_window7_224_AT.pth", 76.6, 57.3),
    "vit_base_patch16_224": ("ARES_ViT_base_patch16_224_AT.pth", 74.7, 49.7),
    "vit_small_patch16_224": ("ARES_ViT_small_patch16_224_AT.pth", 70.7, 43.7),
    "resnet50": ("ARES_ResNet50_AT.pth", 67.0, 34.1),
}

# RobustBench ImageNet Linf (eps 4/255) entries whose network robustft builds (robustbench/model_zoo/imagenet.py at
# 78fcc9e): files on Google Drive by id, no checksum published. Normalization as robustbench's load_model applies it.
_GDRIVE = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"
_RB_SOURCE = "github.com/RobustBench/robustbench model_zoo/imagenet.py (78fcc9e), Linf 4/255"
_ROBUSTBENCH = {  # tag -> (arch, gdrive id, normalization, note)
    "resnet50.rb_salman2020do_r50": ("resnet50", "1TmT5oGa1UvVjM3d-XeSj_XmKqBNRUg8r", "imagenet", "Salman2020Do_R50"),
    "resnet18.rb_salman2020do_r18": ("resnet18", "1OThCOQCOxY6lAgxZxgiK3YuZDD7PPfPx", "imagenet", "Salman2020Do_R18"),
    "wide_resnet50_2.rb_salman2020do_50_2": ("wide_resnet50_2", "1OT7xaQYljrTr3vGbM37xK9SPoPJvbSKB", "imagenet",
                                             "Salman2020Do_50_2"),
    "resnet50.rb_engstrom2019robustness": ("resnet50", "1T2Fvi1eCJTeAOEzrH_4TAIwO8HTOYVyn", "imagenet",
                                           "Engstrom2019Robustness"),
    "resnet50.rb_wong2020fast": ("resnet50", "1deM2ZNS5tf3S_-eRURJi-IlvUL8WJQ_w", "imagenet",
                                 "Wong2020Fast (RobustBench evaluates it at 288 px)"),
    "swin_base_patch4_window7_224.rb_liu2023comprehensive_swin_b": (
        "swin_base_patch4_window7_224", "1-4mtxQCkThJUVdS3wvQ6NnmMZuySqR3c", "imagenet",
        "Liu2023Comprehensive_Swin-B (ARES)"),
    "swin_base_patch4_window7_224.rb_mo2022when_swin_b": (
        "swin_base_patch4_window7_224", "1-SXi4Z2X6Zo_j8EO4slJcBMXNej8fKUd", "imagenet", "Mo2022When_Swin-B"),
    "swin_base_patch4_window7_224.rb_rodriguezmunoz2024characterizing_swin_b": (
        "swin_base_patch4_window7_224", "1-BSUjoFXx3PP-TfeE5fjbofO2lLyUf56", "imagenet",
        "RodriguezMunoz2024Characterizing_Swin-B"),
    "vit_base_patch16_224.rb_mo2022when_vit_b": (
        "vit_base_patch16_224", "1-dUFdvDBflqMsMLjZv3wlPJTm-Jm7net", "imagenet", "Mo2022When_ViT-B"),
    "wide_resnet50_2.rb_chen2024data_wrn_50_2": (
        "wide_resnet50_2", "1-PBlZVILAKFQ7mF8srKjdkTKJZAr61Uf", "none",
        "Chen2024Data_WRN_50_2 (RobustBench feeds it unnormalized [0,1] inputs)"),
}

# Tags follow timm's <recipe>_<data>; the first tag listed for an architecture is its default pretrained weights.
KNOWN_WEIGHTS: dict[str, PretrainedWeights] = {
    **dict(sorted(_madry_weights().items(), key=lambda item: (item[0] != "resnet50.madry_linf4_in1k", item[0]))),
    **{f"{arch}.ares_at_in1k": PretrainedWeights(
        url=f"{_ARES}/{file}", num_classes=1000, normalization="imagenet",
        description=f"ARES 2.0 (Liu et al. 2023), ImageNet-1k Linf 4/255 adversarial training; {clean}% clean, "
                    f"{aa}% AutoAttack per its README",
        checksum_note="none published", layout="timm", source=_ARES_SOURCE)
        for arch, (file, clean, aa) in _ARES_FILES.items()},
    **{name: PretrainedWeights(
        url=_GDRIVE.format(gdrive_id), num_classes=1000, normalization=normalization,
        description=f"RobustBench ImageNet Linf 4/255 entry {note}", checksum_note="none published",
        layout="robustbench", source=_RB_SOURCE)
        for name, (_, gdrive_id, normalization, note) in _ROBUSTBENCH.items()},
    # The reference robust model of this project's CI: no public URL, so it ships with the package (1 MB, its card
    # is the .json beside it in robustft/assets).
    "cifar_resnet20.at_linf8_cifar10": PretrainedWeights(
        url=Path(str(resources.files("robustft") / "assets" / "cifar10_resnet20_linf_at.pt")).as_uri(),
        num_classes=10, normalization="cifar10",
        description="PGD-3 adversarial training on CIFAR-10 (JPEG copy), Linf eps 8/255, 15 epochs (0.644 clean / "
                    "0.385 PGD-20 on 1000 test images per its card)",
        sha256="23a0792f369c037c553a7a1220a6ce658a893d6e814d0552507f0e1716905ab3", layout="robustft",
        source="this repository: the shared reference model of its CI", asset="cifar10_resnet20_linf_at.pt",
    ),
}


def weights_table() -> str:
    """Every ``KNOWN_WEIGHTS`` tag as a markdown table: name, file (URL), checksum, layout, what it is, source."""
    rows = ["| name | file | sha256 | layout | weights | source |", "|---|---|---|---|---|---|"]
    for name, w in KNOWN_WEIGHTS.items():
        checksum = f"`{w.sha256[:16]}…`" if w.sha256 else f"— ({w.checksum_note})"
        file = f"bundled: `robustft/assets/{w.asset}`" if w.asset else f"<{w.url}>"
        rows.append(f"| `{name}` | {file} | {checksum} | {w.layout} | {w.description} | {w.source} |")
    return "\n".join(rows) + "\n"


def cache_dir() -> Path:
    """``$ROBUSTFT_CACHE`` if set, else the per-user cache directory for robustft."""
    if env := os.environ.get("ROBUSTFT_CACHE"):
        return Path(env)
    import platformdirs  # only needed when no cache directory is given

    return Path(platformdirs.user_cache_dir("robustft"))


def cached_path(name: str) -> Path:
    """Where the weights ``name`` are cached: ``<cache_dir>/<name><suffix of the URL's file, else .pt>``."""
    suffix = Path(urllib.parse.urlparse(KNOWN_WEIGHTS[name].url).path).suffix
    return cache_dir() / f"{name}{suffix if suffix in ('.ckpt', '.pth', '.pt', '.safetensors') else '.pt'}"


def fetch_weights(name: str) -> Path:
    """Local path of the checkpoint for the ``arch.tag`` ``name``: the bundled file, else downloaded into
    the cache the first time.

    A download with a published sha256 is checked against it before it is kept; a web page served instead of the
    file (a Google Drive quota or sign-in page) is refused. Either way nothing is left in the cache."""
    weights = KNOWN_WEIGHTS[name]
    if weights.asset:
        return Path(str(resources.files("robustft") / "assets" / weights.asset))
    path = cached_path(name)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    manual = f"download that file yourself and place it at {path}"
    try:
        # Downloads to a temporary file beside `path`, checks the hash prefix (the whole sha256 here) and renames it,
        # so an interrupted or corrupt download leaves nothing.
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=weights.sha256,
                                       progress=sys.stderr.isatty())
    except OSError as err:  # includes urllib's URLError / HTTPError
        raise UserError(f"could not download the {name} weights from {weights.url} ({err}); {manual}") from err
    except RuntimeError as err:  # torch.hub's hash mismatch
        raise UserError(f"the {name} download from {weights.url} does not have its published sha256 "
                        f"{weights.sha256} ({err}); it was not kept; retry, or {manual}") from None
    with path.open("rb") as f:
        head = f.read(256).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        path.unlink()
        raise UserError(f"{weights.url} served a web page instead of the {name} weights (a sign-in or quota page); "
                        f"open it in a browser, {manual}")
    return path


HF_HUB_PREFIX = "hf-hub:"


def hf_hub_directory(name: str) -> Path:
    """The local snapshot directory of ``hf-hub:OWNER/REPO[@REVISION]`` holding its ``config.json`` (if it has one)
    and its weights (``HUB_WEIGHT_FILES``, the first the repo has), downloaded through ``huggingface_hub``.

    Everything is that library's own behaviour: its cache (``HF_HUB_CACHE`` / ``HF_HOME``, shared with timm and
    transformers), offline mode (``HF_HUB_OFFLINE=1``: the cache only), mirrors (``HF_ENDPOINT``) and tokens
    (``HF_TOKEN`` or ``hf auth login``) for gated or private repos."""
    try:
        from huggingface_hub import constants, errors, hf_hub_download
    except ImportError:
        raise UserError(f"{name}: hf-hub: names need the huggingface_hub package: "
                        f"pip install 'robustft[hub]'") from None
    repo, _, revision = name.removeprefix(HF_HUB_PREFIX).partition("@")
    where = f"{repo}{'@' + revision if revision else ''} on {constants.ENDPOINT}"
    offline = " (HF_HUB_OFFLINE is set: only the Hugging Face cache is read, and it lacks them)" \
        if constants.HF_HUB_OFFLINE else ""

    def download(filename: str) -> Path | None:
        """The cached path of ``filename`` in the repo, None when the repo (or, offline, the cache) has none."""
        try:
            return Path(hf_hub_download(repo, filename, revision=revision or None))
        except errors.LocalEntryNotFoundError:  # not cached, and offline or the hub unreachable
            if constants.HF_HUB_OFFLINE:
                return None
            raise
        except errors.EntryNotFoundError:
            return None

    try:
        weights = next((path for file in HUB_WEIGHT_FILES if (path := download(file)) is not None), None)
        if weights is not None:
            download("config.json")
    except errors.HFValidationError as err:
        raise UserError(f"{name} is not a Hugging Face repo name (hf-hub:OWNER/REPO[@REVISION]): {err}") from None
    except errors.RevisionNotFoundError:
        raise UserError(f"{where} has no revision {revision!r}") from None
    except errors.RepositoryNotFoundError:  # also gated and private repos without a token
        raise UserError(f"{where} does not exist or needs access: for a gated or private repo set HF_TOKEN "
                        f"(or run `hf auth login`)") from None
    except OSError as err:  # HfHubHTTPError and connection errors
        raise UserError(f"could not reach {where} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                        f"); set HF_ENDPOINT for a mirror, or HF_HUB_OFFLINE=1 to use the cache only") from None
    if weights is None:
        raise UserError(f"{where} has none of {', '.join(HUB_WEIGHT_FILES)}{offline}")
    return weights.parent


MAX_CONFIG_BYTES = 16 << 20  # a timm config.json is a few kB, with 21k label names a few MB


@dataclass(frozen=True)
class HubConfig:
    """What a hub model directory's ``config.json`` says about its weights (timm ``save_config_for_hf``)."""

    num_classes: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    input_size: tuple[int, ...] | None


def _triple(cfg: dict[str, Any], key: str, kind: type | tuple[type, ...], file: Path) -> tuple | None:
    """``cfg[key]`` as a tuple of three numbers of ``kind``, None when absent; a UserError naming it if malformed."""
    value = cfg.get(key)
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 3
            and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)):
        raise UserError(f"{file} has a malformed {key!r}: {value!r} (expected 3 numbers); fix or delete that field")
    return tuple(value)


def read_hub_config(path: str | os.PathLike) -> HubConfig | None:
    """The ``config.json`` of the hub model directory ``path`` (or ``hf-hub:`` name); None when it has none.

    timm writes ``num_classes`` at the top and the preprocessing (``mean``, ``std``, ``input_size``) under
    ``pretrained_cfg``; older exports put everything at the top (timm ``_hub.py::_parse_model_cfg`` reads both).
    """
    if str(path).startswith(HF_HUB_PREFIX):
        path = hf_hub_directory(str(path))
    file = Path(path) / "config.json"
    if not file.is_file():
        return None
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{file} is larger than {MAX_CONFIG_BYTES >> 20} MB; this is not a model config")
    try:
        raw = json.loads(file.read_text(errors="replace"))
    except json.JSONDecodeError as err:
        raise UserError(f"{file} is not valid JSON ({err})") from None
    pre = raw.get("pretrained_cfg", raw) if isinstance(raw, dict) else None
    if not isinstance(pre, dict):
        raise UserError(f"{file} is not a timm model config (a JSON object with a 'pretrained_cfg' object)")
    num_classes = raw.get("num_classes", pre.get("num_classes"))
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 0):
        raise UserError(f"{file} has a malformed 'num_classes': {num_classes!r}; fix or delete that field")
    return HubConfig(
        num_classes=num_classes or None,  # timm writes 0 for a model without a classifier
        mean=_triple(pre, "mean", (int, float), file),
        std=_triple(pre, "std", (int, float), file),
        input_size=_triple(pre, "input_size", int, file),
    )
