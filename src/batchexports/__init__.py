"""batchexports: scheduled exports of product-analytics data, serving PostHog's batch exports API."""

__version__ = "0.1.0"
