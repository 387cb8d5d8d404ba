"""Benchmark of issue 14 on MNIST: how the Fréchet distance, KID and precision/recall/density/coverage of
`hf_autoencoders.evaluation` behave, what they cost, and what they say about trained models.

    python benchmarks/sample_quality.py --data ../shared/data/mnist --output results.json      # ~5 minutes, 1 core
    python benchmarks/sample_quality.py --data ../shared/data/mnist --models ae=RUN vae=RUN vqvae=RUN
    python benchmarks/sample_quality.py --smoke                                                 # seconds, digits

Prints one JSON object (progress goes to stderr):
- `bias_vs_n`: FD, KID and precision/recall of N real test images against N *other real* (training) images, on the
  domain features, for growing N. The true distance is ~0, so what FD reports is its bias (it falls roughly like
  1/N), while KID's mean (100 subsets of min(1000, N/2)) stays near 0 at every N (it is unbiased).
- `noise_mix`: FD and KID of the test images against training images of which a share is replaced by uniform noise
  (must grow monotonically).
- `seconds`: building the domain features (training the classifier), extracting features per 1,000 images (domain;
  and InceptionV3 on random weights, the same cost as with the FID weights), and one FD / KID / PRDC computation at
  the dimensions of each feature kind.
- `models` (with `--models name=run_folder ...`): `quality_metrics` of each trained model on the test images: its
  reconstructions and `--num_samples` samples (AE/VAE: z ~ N(0, I); VQ-VAE: uniform codes).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from hf_autoencoders.results import dumps, write_json


def log(message: str) -> None:
    print(f"[sample_quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/mnist", help="MNIST in the Hub parquet layout.")
    parser.add_argument("--smoke", action="store_true", help="The embedded digits and tiny sizes: seconds.")
    parser.add_argument("--models", nargs="*", default=[], metavar="NAME=RUN",
                        help="Trained run folders to measure, e.g. vae=/work/runs/fid/vae.")
    parser.add_argument("--num_samples", type=int, default=None, help="Samples per model (default: test images).")
    parser.add_argument("--max_test_samples", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None, help="Also write the JSON here.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from hf_autoencoders.data import load_image_dataset
    from hf_autoencoders.evaluation import (
        FIDInceptionV3,
        InceptionFeatures,
        domain_features,
        frechet_distance,
        kernel_inception_distance,
        precision_recall_density_coverage,
        quality_metrics,
    )

    data_path = None if args.smoke or not Path(args.data).is_dir() else args.data
    data = load_image_dataset(data_path, progress=False)
    train, test = data.train.images.float() / 255, data.test.images.float() / 255
    test = test[: args.max_test_samples]
    sizes = (100, 200) if args.smoke else (250, 500, 1000, 2000, 5000)
    train_images = 300 if args.smoke else 10_000
    result = {"data": data.name if data_path else "embedded digits", "num_train": len(train), "num_test": len(test),
              "torch": torch.__version__, "threads": args.threads}

    log(f"domain features: a SmallCNN on {train_images} labelled training images")
    with tempfile.TemporaryDirectory() as cache:
        features, build_s = timed(domain_features, train[:train_images], data.train.labels[:train_images],
                                  num_classes=data.num_labels, cache_dir=cache, epochs=1 if args.smoke else 5,
                                  progress=False, device="cpu")
    result["features"] = features.description
    real_test, extract_s = timed(features.extract, test)
    pool = train[train_images:] if len(train) - train_images >= max(sizes) else train
    real_train = features.extract(pool[: max(sizes)])

    log("bias of FD against N (real vs real)")
    result["bias_vs_n"] = []
    for n in sizes:
        if n > min(len(real_test), len(real_train)):
            continue
        kid, kid_std = kernel_inception_distance(real_test[:n], real_train[:n], subset_size=min(1000, n // 2))
        prdc = precision_recall_density_coverage(real_test[:n], real_train[:n])
        result["bias_vs_n"].append({"n": n, "fd": frechet_distance(real_test[:n], real_train[:n]), "kid": kid,
                                    "kid_std": kid_std, "precision": prdc["precision"], "recall": prdc["recall"]})

    log("noise mixed into real images")
    n = min(len(real_test), len(real_train), 2000)
    noise = features.extract(torch.rand(n, *test.shape[1:], generator=torch.Generator().manual_seed(0)))
    result["noise_mix"] = []
    for share in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0):
        k = int(share * n)
        mixed = torch.cat([noise[:k], real_train[k:n]])
        result["noise_mix"].append({"noise_share": share, "fd": frechet_distance(real_test[:n], mixed),
                                    "kid": kernel_inception_distance(real_test[:n], mixed)[0]})
    result["noise_mix_fd_monotonic"] = all(a["fd"] < b["fd"] for a, b in zip(result["noise_mix"],
                                                                           result["noise_mix"][1:]))

    log("timings")
    inception = InceptionFeatures(FIDInceptionV3(), "random weights (timing only)")
    probe = test[: 20 if args.smoke else 100]
    _, inception_s = timed(inception.extract, probe)
    big = torch.randn(len(real_test), 2048, dtype=torch.float64)
    result["seconds"] = {
        "build_domain_features": build_s,
        "domain_features_per_1000_images": extract_s / len(test) * 1000,
        "inception_features_per_1000_images": inception_s / len(probe) * 1000,
        f"fd_{features.num_features}d": timed(frechet_distance, real_test, real_train[: len(real_test)])[1],
        "fd_2048d": timed(frechet_distance, big, big.flip(0) + 0.1)[1],
        f"kid_{features.num_features}d": timed(kernel_inception_distance, real_test, real_train[: len(real_test)])[1],
        f"prdc_{features.num_features}d": timed(precision_recall_density_coverage, real_test,
                                                real_train[: len(real_test)])[1],
    }

    if args.models:
        from hf_autoencoders.hub import load_model

        result["models"] = {}
        for item in args.models:
            name, _, path = item.partition("=")
            log(f"quality of {name} ({path})")
            model = load_model(path)
            metrics, seconds = timed(quality_metrics, model, test, features=features, num_samples=args.num_samples,
                                     progress=False)
            result["models"][name] = {"run": path, "display_name": model.config.display_name, **metrics,
                                      "seconds": seconds}
    if args.output:
        write_json(args.output, result)
    print(dumps(result))
    return result


if __name__ == "__main__":
    main()
