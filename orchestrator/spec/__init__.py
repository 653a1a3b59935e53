"""What a run is asked to do: the mission, the preflight run plan, provider checks, model tiers."""
