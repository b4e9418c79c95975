"""Training-pipeline throughput: samples/s that reach ``method.training_step`` with their views.

For each method's views (CE 1 view, TCL 3; DivideMix's when a method of that name exists) at
32 px, from in-memory CIFAR images (uint8 tensors) and from the CIFAR-10 JPEG folder, with 0, 1
and 2 DataLoader workers:

* before (``data.augment_on=workers``): every view of every sample made in the workers by
  torchvision v2, one sample at a time;
* after (``data.augment_on=device`` on the CPU device): workers only decode, the main process
  makes the views of the whole batch (``train_set.finish_batch``, as the trainer does);
* the JPEG folder decoded once into memory (``data.cache_decoded``): its one-off cost.

Then the samples/s a T4 consumes, from an assumed T4 encoder throughput (no GPU figure is in
BENCHMARKS.md yet). Timing covers one epoch over ``--samples`` samples, worker start included,
as the trainer starts workers every epoch.

    python bench/loader_throughput.py            # about 2-3 min on 2 idle cores
    python bench/loader_throughput.py --quick    # fewer samples
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from common import CIFAR_TARBALL, markdown_table, print_header

from tcl_lite.data.build import DataBundle
from tcl_lite.data.datasets import FileImages, IndexedDataset, TensorImages
from tcl_lite.data.decoded_cache import decode_all
from tcl_lite.methods import METHODS

CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def extract_jpegs(dest: Path, count: int) -> list[str]:
    """The first ``count`` training JPEGs of the shared tarball (round-robin over classes)."""
    per_class = -(-count // 10)
    taken: dict[str, int] = {}
    paths = []
    with tarfile.open(CIFAR_TARBALL) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or parts[1] != "train":
                continue
            if taken.get(parts[2], 0) >= per_class:
                continue
            taken[parts[2]] = taken.get(parts[2], 0) + 1
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            paths.append(str(target))
            if len(paths) == count:
                break
    return sorted(paths)


def bundle(images: TensorImages | FileImages, augment_on: str) -> DataBundle:
    n = len(images)
    train = IndexedDataset(images, torch.zeros(n, dtype=torch.long).numpy(), None, seed=0)
    return DataBundle(train=train, test=train, num_classes=10, noisy_labels=train.labels, true_labels=None,
                      mean=CIFAR_STATS[0], std=CIFAR_STATS[1], channels=3, image_size=32,
                      class_names=[str(k) for k in range(10)], augment_on=augment_on)


def _cpu_seconds() -> float:
    # this process (all its threads) + reaped children: the DataLoader joins its workers at the end
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def throughput(images: TensorImages | FileImages, views: tuple[str, ...], augment_on: str, workers: int,
               batch_size: int) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) of one epoch through a shuffled, drop_last
    loader like the trainer's, views made on the way. CPU seconds count the main process and its
    workers, so the second figure holds on a shared machine where the first depends on the load."""
    train_set = bundle(images, augment_on).train_views(views, "cpu")
    train_set.set_epoch(1)
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, generator=torch.Generator().manual_seed(0))
    t0, c0, n = time.perf_counter(), _cpu_seconds(), 0
    for batch in loader:
        batch = train_set.finish_batch(batch)
        n += len(batch["index"])
    wall = time.perf_counter() - t0
    del batch, loader  # the workers are joined (and their CPU time counted) once the iterator is gone
    return n / wall, n / (_cpu_seconds() - c0)


def kornia_comparison(images: torch.Tensor, batch_size: int) -> None:
    """TCL's three views of one batch: Kornia's augmentation module vs ``BatchedViews`` (CPU time).

    Kornia (benchmark-only, ``pip install kornia``) draws from torch's global generator per call and
    applies ColorJitter in a fixed order: it fits neither the (seed, epoch, index) rule nor the
    per-sample random order, so it is timed only as the alternative the issue names.
    """
    if importlib.util.find_spec("kornia") is None:
        print("Kornia not installed: no comparison (pip install kornia to add it).")
        return
    import kornia
    import kornia.augmentation as K

    from tcl_lite.data.batched_views import BatchedViews

    mean, std = (torch.tensor(v) for v in CIFAR_STATS)
    strong = K.AugmentationSequential(
        K.RandomResizedCrop((32, 32), scale=(0.2, 1.0)), K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2),
        K.RandomSolarize(thresholds=0.0, additions=0.0, p=0.5), K.Normalize(mean, std))
    weak = K.AugmentationSequential(K.RandomCrop((32, 32), padding=4), K.RandomHorizontalFlip(), K.Normalize(mean, std))
    ours = BatchedViews(("weak", "strong", "strong"), 32, CIFAR_STATS[0], CIFAR_STATS[1], seed=0)
    batch, index = images[:batch_size].contiguous(), torch.arange(batch_size)

    def kornia_views() -> tuple[torch.Tensor, ...]:
        x = batch.float() / 255
        return weak(x), strong(x), strong(x)

    for name, fn in ((f"Kornia {kornia.__version__}", kornia_views),
                     ("tcl_lite BatchedViews", lambda: ours(batch, index, 0))):
        fn()
        c0 = time.process_time()
        for _ in range(5):
            fn()
        per_batch = (time.process_time() - c0) / 5
        print(f"  {name}: TCL's 3 views of {batch_size} images in {per_batch * 1e3:.0f} ms of CPU "
              f"({batch_size / per_batch:,.0f} samples per CPU-second)")


def method_views() -> list[tuple[str, tuple[str, ...]]]:
    wanted = [("ce", "CE"), ("tcl", "TCL"), ("dividemix", "DivideMix")]
    found = [(label, tuple(METHODS[name].views)) for name, label in wanted if name in METHODS]
    if "dividemix" not in METHODS:
        print("No method named dividemix on this branch: its 2+2 weak views are not measured.")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=2048, help="samples per measured epoch")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--t4-images-per-s", type=float, default=3500.0,
                    help="assumed T4 training throughput of PreAct ResNet-18, 32 px, fp16, forward+backward, "
                         "in encoder images/s")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads of the main process (0: torch's default). On a loaded shared "
                         "machine 1 avoids OpenMP threads waiting for each other at every operation")
    ap.add_argument("--quick", action="store_true", help="512 samples per epoch")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = 512 if args.quick else args.samples
    workers = [int(w) for w in args.workers.split(",")]
    print_header("Training-pipeline throughput (bench/loader_throughput.py)")
    print(f"torch intra-op threads in the main process: {torch.get_num_threads()}; batch {args.batch_size}; "
          f"{n} samples per epoch; 32 px")
    methods = method_views()
    with tempfile.TemporaryDirectory() as tmp:
        paths = extract_jpegs(Path(tmp), n)
        jpegs = FileImages(paths, 32)
        t0 = time.perf_counter()
        tensors = decode_all(jpegs, 0)
        decode_rate = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        decode_all(jpegs, 2)
        decode_rate2 = n / (time.perf_counter() - t0)
        rows = []
        for label, views in methods:
            for source_name, source in (("tensors", tensors), ("JPEG folder", jpegs)):
                for w in workers:
                    before, before_cpu = throughput(source, views, "workers", w, args.batch_size)
                    after, after_cpu = throughput(source, views, "device", w, args.batch_size)
                    rows.append([label, len(views), source_name, w, f"{before:,.0f}", f"{after:,.0f}",
                                 f"{after / before:.1f}x", f"{before_cpu:,.0f}", f"{after_cpu:,.0f}",
                                 f"{after_cpu / before_cpu:.1f}x"])
                    print(" | ".join(str(c) for c in rows[-1]), flush=True)
    print()
    print(markdown_table(["method", "views", "source", "workers", "before: per-sample (samples/s)",
                          "after: batched, CPU device (samples/s)", "after / before",
                          "before (samples per CPU-s)", "after (samples per CPU-s)", "after / before (CPU)"], rows))
    print(f"\nDecode once (data.cache_decoded): {decode_rate:,.0f} JPEGs/s in the main process, "
          f"{decode_rate2:,.0f}/s with 2 workers (50,000 CIFAR-10 JPEGs: {50000 / decode_rate2:.0f} s once per "
          f"launch, then every epoch reads the 'tensors' rows).")
    print("\nBatched libraries on the CPU device, main process:")
    kornia_comparison(tensors.images, args.batch_size)
    encoder_images = {"CE": 1, "TCL": 6}  # TCL: 3 views + their 3 mixed images
    print(f"\nA T4 needs (assumption: {args.t4_images_per_s:,.0f} encoder images/s, PreAct ResNet-18, 32 px, "
          "fp16, forward+backward; not measured, no GPU here):")
    for label, views in methods:
        per_sample = encoder_images.get(label, len(views))
        print(f"  {label}: {per_sample} encoder images per sample -> "
              f"{args.t4_images_per_s / per_sample:,.0f} samples/s ({len(views)} views per sample)")


if __name__ == "__main__":
    main()
