"""Layer 1: images and cases (numpy, pydicom, pynrrd; never torch)."""
