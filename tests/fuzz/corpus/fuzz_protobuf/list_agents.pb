
eyJ0IjoxfQ"a=b,c=,=d,e