#!/bin/sh
# Download, as wheels into .whl/, the project's runtime dependencies that the lent GPU
# machine's python3 lacks (it has CUDA torch, torchvision, safetensors, scikit-learn,
# scikit-image, SciPy, matplotlib, Pillow, psutil and tqdm; nothing can be fetched there).
# Enough for gpu_session.py: phantom DICOM (some compressed, as real archives are), NRRD,
# training, packages, predict and checks.
# Versions are this project's pins (constraints.txt); the machine's Python is 3.12.
# Run from the repository root; gpu_session.py's docstring gives the device command.
set -eu
python=${PYTHON:-python3}
packages="pydicom pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg pyjpegls pynrrd isal monai"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl
for name in $packages; do
    pin=$(grep -i "^$(echo "$name" | sed 's/[-_.]/[-_.]/g')==" constraints.txt) || {
        echo "$name: not pinned in constraints.txt" >&2
        exit 1
    }
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$pin"
done
ls .whl
