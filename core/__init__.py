"""The shared runtime below every stage: errors, device, distributed, atomic IO, the teacher."""
