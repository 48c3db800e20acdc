"""The kopf layer: decorators in ``registry``, each handler a guard and one call into ``testrun``."""
