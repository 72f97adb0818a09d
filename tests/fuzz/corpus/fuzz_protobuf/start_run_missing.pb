
w
stylelong