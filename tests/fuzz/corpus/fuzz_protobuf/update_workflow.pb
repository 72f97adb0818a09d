

wn
steps
name
bogus