"""Putting a trained model to work: export to a model folder, verify, serve, share. Everything here except
``export.py``, ``pretrained.py`` (the folder as a PyTorch model, from_pretrained / push) and ``explain.py``
(``sigverify explain``'s maps) runs without torch (``pip install sigverify[serve]``); the case report draws its
maps only where torch is installed."""
