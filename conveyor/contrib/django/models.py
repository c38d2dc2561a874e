"""No models: Conveyor's tables are its own migrations' (created by ``manage.py migrate`` through apps.py).

The module exists because Django sends ``post_migrate`` only to apps that have one.
"""
