"""Lua scripts used only by the script runner's tests."""
