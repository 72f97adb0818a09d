
icycle:/
a$3b1f1a52-1c2d-4e5f-8a9b-0c1d2e3f4a5bx*b:/
b$3b1f1a52-1c2d-4e5f-8a9b-0c1d2e3f4a5by*a