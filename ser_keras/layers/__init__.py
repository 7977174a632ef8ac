"""Custom Keras layers of the deep recognition framework (registered as package "ser_keras")."""

from ser_keras.layers.attention_pooling import AttentionPooling
from ser_keras.layers.block_pooling import BlockPooling
from ser_keras.layers.sparse_ae_conv import SparseAEConv
from ser_keras.layers.statistics_pooling import StatisticsPooling

__all__ = ["AttentionPooling", "BlockPooling", "SparseAEConv", "StatisticsPooling"]
