"""torch.nn.Module definitions only: no file I/O, no training loops."""
