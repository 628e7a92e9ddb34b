"""Networks: the founding document's DCGAN, SNGAN-style ResNets, conditioning layers, fusion models."""
