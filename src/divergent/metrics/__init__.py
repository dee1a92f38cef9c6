"""divergent.metrics"""
