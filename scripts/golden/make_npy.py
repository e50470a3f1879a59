#!/usr/bin/env python3
"""Writes the .npy test fixtures in tests/data with NumPy itself (run with Debian's python3-numpy)."""
import numpy as np

out = "tests/data/"
np.save(out + "points_f32.npy", np.array([[0.5, -1.25], [2.0, 3.5], [-0.125, 7.0]], dtype=np.float32))
np.save(out + "points_f64.npy", np.array([[1e-3, -2.5, 3.25]], dtype=np.float64))
np.save(out + "labels_i64.npy", np.array([2, 0, 1], dtype=np.int64))
np.save(out + "fortran_f32.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
np.save(out + "cube_f32.npy", np.zeros((2, 2, 2), dtype=np.float32))
