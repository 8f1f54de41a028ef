"""Putting a trained model to work: export to a model folder, verify, serve, share. Everything here except
``export.py`` and ``pretrained.py`` (the folder as a PyTorch model, from_pretrained / push) runs without
torch (``pip install sigverify[serve]``)."""
