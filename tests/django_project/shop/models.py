from django.db import models


class Order(models.Model):
    id = models.CharField(primary_key=True, max_length=20)
    confirmed = models.BooleanField(default=False)


class AuditEntry(models.Model):
    order_id = models.CharField(max_length=20)
