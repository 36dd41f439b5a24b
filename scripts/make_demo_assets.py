"""Build the demo's data from the CIFAR-10 JPEG zip: raw JPEG bytes copied, never re-encoded.

- source task (for `robustft pretrain`, not shipped): classes 0-4 (airplane..deer), all train and test images;
- demo downstream task (shipped in src/robustft/assets/): classes 5-9 (dog..truck), the first 200 train and
  first 100 test images of each class in sorted-path order.

Usage:
  python scripts/make_demo_assets.py data ../shared/data/cifar10-jpeg/cifar10-jpeg.zip OUT_DIR
  robustft pretrain --config configs/cpu/demo_source.yaml --data OUT_DIR/demo_source_airplane-deer.zip
  python scripts/make_demo_assets.py package runs/demo_source     # ship the pre-trained model + its card
"""

import argparse
import json
import shutil
import zipfile
from pathlib import Path

SOURCE_CLASSES = ["airplane", "automobile", "bird", "cat", "deer"]
DEMO_CLASSES = ["dog", "frog", "horse", "ship", "truck"]
DEMO_PER_CLASS = {"train": 200, "test": 100}
ASSETS = Path(__file__).resolve().parents[1] / "src" / "robustft" / "assets"
ASSET = ASSETS / "demo_cifar10_dog-truck.zip"
SOURCE_MODEL = ASSETS / "demo_source_resnet20.pt"
PRETRAIN_COMMAND = ("robustft pretrain --config configs/cpu/demo_source.yaml "
                    "--data OUT_DIR/demo_source_airplane-deer.zip")


def copy_members(src: zipfile.ZipFile, dst_path: Path, classes: list[str], per_class: dict[str, int | None]) -> int:
    """Copy ``<split>/<class>/*.jpg`` members of the chosen classes (first k per class, sorted) into a new zip."""
    names = sorted(n for n in src.namelist() if n.endswith(".jpg"))
    count = 0
    with zipfile.ZipFile(dst_path, "w", compression=zipfile.ZIP_STORED) as dst:
        for split, k in per_class.items():
            for cls in classes:
                members = [n for n in names if n.startswith(f"{split}/{cls}/")][:k]
                for name in members:
                    info = zipfile.ZipInfo(name, date_time=(2019, 3, 31, 0, 0, 0))  # fixed: reproducible bytes
                    dst.writestr(info, src.read(name))
                count += len(members)
    return count


def package_source(run_dir: Path) -> None:
    """Copy a finished pretrain run's exported model into the assets, with a card holding its command and metrics."""
    card = json.loads((run_dir / "model.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    shutil.copyfile(run_dir / "model.pt", SOURCE_MODEL)
    card.update({"produced_by": PRETRAIN_COMMAND, "data_builder": "python scripts/make_demo_assets.py data "
                 "../shared/data/cifar10-jpeg/cifar10-jpeg.zip OUT_DIR", "train_data": "CIFAR-10 JPEG copy, classes "
                 + ", ".join(SOURCE_CLASSES) + " (all train images; 10% carved out for validation)",
                 "measured": {"test": results["test"], "wall_s": results["wall_s"],
                              "provenance": results["provenance"]}})
    SOURCE_MODEL.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"packaged {run_dir / 'model.pt'} -> {SOURCE_MODEL}")


def main() -> None:
    """``data``: write the source-task zip to OUT_DIR and the demo zip into the assets; ``package``: ship a model."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data")
    p.add_argument("cifar10_zip", type=Path)
    p.add_argument("out_dir", type=Path)
    p = sub.add_parser("package")
    p.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    if args.command == "package":
        package_source(args.run_dir)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.cifar10_zip) as src:
        n = copy_members(src, args.out_dir / "demo_source_airplane-deer.zip", SOURCE_CLASSES,
                         {"train": None, "test": None})
        print(f"source task: {n} images -> {args.out_dir / 'demo_source_airplane-deer.zip'}")
        n = copy_members(src, ASSET, DEMO_CLASSES, DEMO_PER_CLASS)
        print(f"demo task: {n} images -> {ASSET} ({ASSET.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
