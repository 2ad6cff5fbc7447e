"""Figures: training curves and confusion matrices (:mod:`.curves`), image grids, strips,
traversals, latent scatters, ROC curves and GIF animations (:mod:`.images`), and heatmaps of
recurrent gates (:mod:`.gates`).
"""
