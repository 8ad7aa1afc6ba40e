"""spatialboost.datagen"""
