"""Who works: roles, team composition rules, the skills registry and handlers."""
