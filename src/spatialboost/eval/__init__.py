"""spatialboost.eval"""
