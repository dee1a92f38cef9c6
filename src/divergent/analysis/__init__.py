"""Analysis tools of the theory papers: scaling-law fits, synthetic sources, KDE regimes,
MLE risk expansions and representation gaps."""
