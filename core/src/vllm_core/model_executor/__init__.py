"""Models, their layers and the loaders that fill them."""
