"""Training: GRPO-family RL on the same environments.

Imports torch; `import lmgym` does not import this package.
"""
