"""transferlab: adapt pre-trained models to small target tasks, and measure what adaptation did."""
__version__ = "0.1.0"
