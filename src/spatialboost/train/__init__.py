"""spatialboost.train"""
