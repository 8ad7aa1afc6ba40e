"""spatialboost.models"""
