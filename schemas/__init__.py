"""The shared language of govledger: event schemas, codec, topics, money, settings."""
