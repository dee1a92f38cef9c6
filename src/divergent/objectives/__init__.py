"""divergent.objectives"""
