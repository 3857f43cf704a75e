"""What a site runs: the REST client, the client runtime and the local simulation launcher."""
