"""The benchmark app: one model per role, so figures do not depend on the example app."""
