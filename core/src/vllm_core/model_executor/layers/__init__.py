"""Building blocks of the decoder models; each calls the platform's named ops."""
