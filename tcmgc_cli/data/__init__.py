"""Reading videos and annotations."""
