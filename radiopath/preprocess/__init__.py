"""Preprocessing: CT resampling, normalisation and cropping; WSI tissue masks and tiling."""
