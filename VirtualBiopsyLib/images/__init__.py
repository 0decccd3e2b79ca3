"""Layer 1: images and cases (numpy, pydicom, SimpleITK; never torch)."""
