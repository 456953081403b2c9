"""Text side: cleaning, encoders and text classifiers."""
