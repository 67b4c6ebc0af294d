"""Hydra configuration files for rl_tickets (shipped as package data)."""
