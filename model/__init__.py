"""Models of network-anomaly: feature spec, autoencoder, training, export and scoring."""
