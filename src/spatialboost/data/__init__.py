"""spatialboost.data"""
