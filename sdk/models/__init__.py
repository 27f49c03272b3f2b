"""Network definitions (timm-style ``nn.Module`` trees whose parameter names equal the
official checkpoints' keys). Each family's module imports torch itself; this package
imports nothing heavy, so ``import edgesentry.models`` stays cheap."""
