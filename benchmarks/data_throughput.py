"""tf.data input throughput next to the model's training throughput.

    python benchmarks/data_throughput.py                      # synthetic JPEG folder, ViT-Ti/16
    python benchmarks/data_throughput.py --data DIR --variant S/16 --batch-size 32

The input pipeline must deliver images faster than the model consumes them,
or the accelerator waits. This prints images/s of ``keras_vit.data``'s
training pipeline (decode, inception crop, flip, resize, scale; with and
without MixUp / RandAugment) and of the training step of a ViT on the same
batch size, measured in one process after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def synthetic_jpeg_folder(root, num_images, size=320):
    """Writes ``num_images`` JPEG crops of scikit-image's sample photos in 2 class folders."""
    import numpy as np
    import tensorflow as tf
    from skimage import data as samples

    photos = [samples.chelsea(), samples.astronaut(), samples.coffee()]
    rng = np.random.default_rng(0)
    for i in range(num_images):
        photo = photos[i % len(photos)]
        top = rng.integers(0, photo.shape[0] - size // 2)
        left = rng.integers(0, photo.shape[1] - size // 2)
        crop = tf.image.resize(photo[top:, left:][:size, :size], (size, size))
        folder = os.path.join(root, f"class_{i % 2}")
        os.makedirs(folder, exist_ok=True)
        tf.io.write_file(
            os.path.join(folder, f"{i}.jpg"), tf.io.encode_jpeg(tf.cast(crop, tf.uint8))
        )
    return root


def images_per_second(dataset, batches, batch_size):
    """Throughput of iterating ``batches`` batches after one warm-up batch."""
    iterator = iter(dataset)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def model_images_per_second(variant, image_size, batch_size, steps, jit_compile):
    """Training-step throughput of ``variant`` on random inputs (SGD, no data loading)."""
    import keras
    import numpy as np

    import keras_vit

    model = keras_vit.build_variant(variant, image_size=image_size, num_classes=2)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    x = np.random.uniform(-1, 1, (batch_size, image_size, image_size, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[np.arange(batch_size) % 2]
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Image folder (default: synthetic JPEGs in a temp dir).")
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--variant", default="Ti/16")
    parser.add_argument("--model-steps", type=int, default=3)
    parser.add_argument("--jit-compile", action="store_true")
    args = parser.parse_args()

    from keras_vit import data

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or synthetic_jpeg_folder(tmp, args.num_images)
        source = data.open_source(folder)
        settings = {
            "decode + inception crop + flip": {},
            "+ MixUp": {"mixup": 0.2},
            "+ RandAugment(2, 0.5)": {"randaugment": {"num_ops": 2, "factor": 0.5}},
            "decoded in memory (cache)": {"cache": True},
        }
        rows = []
        for name, options in settings.items():
            options = dict(options)
            cache = options.pop("cache", False)
            pipeline = data.train_stream(
                source, args.image_size, args.batch_size, augment=options, cache=cache, repeat=True
            )
            if cache:  # fill the cache once before timing
                batches_in_data = source.num_examples // args.batch_size
                images_per_second(pipeline, batches_in_data, args.batch_size)
            rate = images_per_second(pipeline, args.batches, args.batch_size)
            rows.append((f"tf.data: {name}", rate))
    rows.append(
        (
            f"model: ViT-{args.variant} train step{' (XLA)' if args.jit_compile else ''}",
            model_images_per_second(
                args.variant, args.image_size, args.batch_size, args.model_steps, args.jit_compile
            ),
        )
    )
    print(f"\n{args.image_size}x{args.image_size}, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"| {'stage':<45} | images/s |\n|{'-' * 47}|---------:|")
    for name, rate in rows:
        print(f"| {name:<45} | {rate:8.1f} |")


if __name__ == "__main__":
    main()
