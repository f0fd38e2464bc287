"""Front-end processors (``MultiModalProcessor``): the model's own HF image processor, token counts."""
