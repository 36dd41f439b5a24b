"""Build the demo's data from the CIFAR-10 JPEG zip: raw JPEG bytes copied, never re-encoded.

- source task (for `robustft pretrain`, not shipped): classes 0-4 (airplane..deer), all train and test images;
- demo downstream task (shipped in src/robustft/assets/): classes 5-9 (dog..truck), the first 200 train and
  first 100 test images of each class in sorted-path order.

Usage: python scripts/make_demo_assets.py ../shared/data/cifar10-jpeg/cifar10-jpeg.zip OUT_DIR
"""

import argparse
import zipfile
from pathlib import Path

SOURCE_CLASSES = ["airplane", "automobile", "bird", "cat", "deer"]
DEMO_CLASSES = ["dog", "frog", "horse", "ship", "truck"]
DEMO_PER_CLASS = {"train": 200, "test": 100}
ASSET = Path(__file__).resolve().parents[1] / "src" / "robustft" / "assets" / "demo_cifar10_dog-truck.zip"


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


def main() -> None:
    """Write the source-task zip to OUT_DIR and the demo zip into the package assets."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cifar10_zip", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.cifar10_zip) as src:
        n = copy_members(src, args.out_dir / "demo_source_airplane-deer.zip", SOURCE_CLASSES,
                         {"train": None, "test": None})
        print(f"source task: {n} images -> {args.out_dir / 'demo_source_airplane-deer.zip'}")
        n = copy_members(src, ASSET, DEMO_CLASSES, DEMO_PER_CLASS)
        print(f"demo task: {n} images -> {ASSET} ({ASSET.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
