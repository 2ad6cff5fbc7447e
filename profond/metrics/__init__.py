"""Evaluation of generative models: FID, KID, Inception Score, precision/recall and the
class histogram (:mod:`.generative`), on the features of a trained classifier
(:mod:`.features`: the shipped Fashion-MNIST net, or InceptionV3 when installed).
"""
