"""communicate."""
