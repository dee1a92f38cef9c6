"""divergent.train"""
