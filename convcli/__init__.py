"""convcli: convolutions and pooling on images, exactly as CNN layers define them."""
