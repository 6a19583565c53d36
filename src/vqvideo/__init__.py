"""vqvideo: still images to short videos with a VQ-VAE and an attention + LSTM prior."""

__version__ = "0.1.0"
