"""What a run leaves behind: the run store, typed events, reports, the snapshot, control
requests.
"""
