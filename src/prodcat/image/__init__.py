"""Image side: safe decoding, encoders and image classifiers."""
